"""What a job's own cgroups say of its CPU and memory limits, read from inside the job.

`PROBE` is a Python program a test runs as the job (under Debian's /usr/bin/python3, as the
job's user): it prints one JSON object, each limit file of each layout that the job's
cgroups have (`v2 cpu.max`, `v2 memory.max`, `v1 cpu.cfs_quota_us`, `v1
memory.limit_in_bytes`; absent where the job's group lacks the file), and the job's
LABQ_CPUS, LABQ_MEM_MB and RAY_OVERRIDE_RESOURCES.
"""

from __future__ import annotations

import json
from typing import Any

PROBE = r"""
import json, os
found = {}
v2 = '/sys/fs/cgroup' if os.path.exists('/sys/fs/cgroup/cgroup.controllers') \
    else '/sys/fs/cgroup/unified'
for line in open('/proc/self/cgroup').read().splitlines():
    _, controllers, path = line.split(':', 2)
    names = controllers.split(',')
    wanted = []
    if controllers == '':
        wanted = [('v2 cpu.max', v2 + path + '/cpu.max'),
                  ('v2 memory.max', v2 + path + '/memory.max')]
    if 'cpu' in names:
        wanted.append(('v1 cpu.cfs_quota_us', '/sys/fs/cgroup/cpu' + path + '/cpu.cfs_quota_us'))
    if 'memory' in names:
        wanted.append(('v1 memory.limit_in_bytes',
                       '/sys/fs/cgroup/memory' + path + '/memory.limit_in_bytes'))
    for key, file in wanted:
        try:
            found[key] = open(file).read().strip()
        except OSError:
            pass
found['cgroup'] = open('/proc/self/cgroup').read()
for name in ('LABQ_CPUS', 'LABQ_MEM_MB', 'RAY_OVERRIDE_RESOURCES'):
    found[name] = os.environ.get(name)
print(json.dumps(found))
"""


def parse(output: str) -> dict[str, Any]:
    """The probe's JSON, from the last line of a job's output."""
    return dict(json.loads(output.strip().splitlines()[-1]))
