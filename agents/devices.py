"""A job's GPUs enforced by the kernel: a cgroup v2 device program (BPF), as Slurm's and
systemd's device policies are.

NVIDIA's GPUs are character devices of major 195: `/dev/nvidia<N>` is minor N (N is the
driver's minor number, `Device Minor` in /proc/driver/nvidia/gpus/*/information), and
`/dev/nvidiactl` (255) and `/dev/nvidia-modeset` (254) are shared by every GPU. Each job's
cgroup gets a `BPF_PROG_TYPE_CGROUP_DEVICE` program that refuses (EPERM) every
`/dev/nvidia<N>` (195:0..253) that is not one of the job's GPUs and lets everything else pass
to the next check (programs of the groups above, attached with BPF_F_ALLOW_MULTI, e.g.
systemd's, still apply: the kernel allows an access only if every program does). So a job that
sets `CUDA_VISIBLE_DEVICES=0,1,2,3` cannot open the other GPUs at all.

The program is assembled here by hand (a dozen instructions, as systemd's bpf-devices.c does),
loaded with bpf(BPF_PROG_LOAD) and attached to the job's cgroup with bpf(BPF_PROG_ATTACH);
it lives as long as the cgroup. Needs root (CAP_BPF and CAP_SYS_ADMIN, or CAP_SYS_ADMIN),
a kernel with CONFIG_CGROUP_BPF (every distribution kernel since 4.15) and a cgroup v2 group
per job — a pure v2 node, or a hybrid one's v2 tree (the kernel runs the program of a
process's v2 group whatever v1 controllers are mounted).
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import struct

NVIDIA_MAJOR = 195
LAST_GPU_MINOR = 253  # 254: nvidia-modeset, 255: nvidiactl (shared, never refused)

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351}
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
BPF_DEVCG_DEV_CHAR = 2
_ATTR_SIZE = 128

# Instruction classes and operations (linux/bpf_common.h, linux/bpf.h).
_LDX_MEM_W = 0x61  # dst = *(u32 *)(src + off)
_AND64_K = 0x57  # dst &= imm
_MOV64_K = 0xB7  # dst = imm
_JNE_K = 0x55  # if dst != imm: pc += off
_JEQ_K = 0x15  # if dst == imm: pc += off
_JGT_K = 0x25  # if dst > imm (unsigned): pc += off
_EXIT = 0x95


class DeviceError(OSError):
    """The device program could not be loaded or attached; the message says why."""


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def program(allowed: list[int]) -> bytes:
    """The device program for a job whose GPUs have the driver minors `allowed`: 0 (refuse)
    for a character device 195:M with M <= 253 not in `allowed`, else 1 (allow).
    Its context (struct bpf_cgroup_dev_ctx): access_type (type in the low 16 bits), major,
    minor, each a u32, in r1."""
    minors = sorted({m for m in allowed if 0 <= m <= LAST_GPU_MINOR})
    body = [
        _insn(_LDX_MEM_W, 2, 1, 0),  # r2 = access_type
        _insn(_AND64_K, 2, imm=0xFFFF),  # r2 = device type
        None,  # if r2 != char: allow
        _insn(_LDX_MEM_W, 3, 1, 4),  # r3 = major
        None,  # if r3 != 195: allow
        _insn(_LDX_MEM_W, 4, 1, 8),  # r4 = minor
        None,  # if r4 > 253: allow (nvidiactl, nvidia-modeset)
        *[None for _ in minors],  # if r4 == a minor of the job's: allow
        _insn(_MOV64_K, 0, imm=0),  # refuse
        _insn(_EXIT),
    ]
    allow = len(body)  # the index of the allow instructions, appended below
    jumps = {2: (_JNE_K, 2, BPF_DEVCG_DEV_CHAR), 4: (_JNE_K, 3, NVIDIA_MAJOR),
             6: (_JGT_K, 4, LAST_GPU_MINOR)}
    jumps.update({7 + i: (_JEQ_K, 4, minor) for i, minor in enumerate(minors)})
    code = b""
    for pc, insn in enumerate(body):
        if insn is None:
            op, reg, imm = jumps[pc]
            insn = _insn(op, reg, off=allow - pc - 1, imm=imm)
        code += insn
    return code + _insn(_MOV64_K, 0, imm=1) + _insn(_EXIT)


def _bpf(cmd: int, attr: bytes) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise DeviceError(f"bpf() is not known on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buffer = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    result = int(libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), buffer,
                              ctypes.c_uint(_ATTR_SIZE)))
    if result < 0:
        errno = ctypes.get_errno()
        raise DeviceError(errno, os.strerror(errno))
    return result


def load(allowed: list[int]) -> int:
    """Load the device program (see `program`); its file descriptor."""
    code = program(allowed)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr = struct.pack("<IIQQIIQII16s", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                       ctypes.addressof(insns), ctypes.addressof(license_), 1, len(log),
                       ctypes.addressof(log), 0, 0, b"labq_gpus")
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except DeviceError as exc:
        detail = log.value.decode(errors="replace").strip().splitlines()
        raise DeviceError(f"cannot load the GPU device program: {exc.strerror}"
                          + (f" ({detail[-1]})" if detail else "")) from None


def confine(cgroup: str, allowed: list[int]) -> None:
    """Let the processes of the v2 group `cgroup` open no NVIDIA GPU but those with driver
    minors `allowed`. Raises DeviceError, saying why, if it cannot."""
    prog = load(allowed)
    try:
        try:
            target = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceError(f"cannot open cgroup {cgroup}: {exc.strerror}") from None
        try:
            _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", target, prog, BPF_CGROUP_DEVICE,
                                              BPF_F_ALLOW_MULTI))
        except DeviceError as exc:
            raise DeviceError(f"cannot attach the GPU device program to {cgroup}: "
                              f"{exc.strerror}") from None
        finally:
            os.close(target)
    finally:
        os.close(prog)  # (the attachment keeps the program while the cgroup lives)


def available() -> str:
    """"" if device programs can be loaded here (root, bpf() with cgroup device programs),
    else why not."""
    try:
        os.close(load([]))
    except DeviceError as exc:
        return str(exc)
    return ""


def nvidia_minors(proc_root: str = "/proc") -> list[int]:
    """The driver minor of each NVIDIA GPU, in PCI bus order (the order of NVML's and of
    `CUDA_DEVICE_ORDER=PCI_BUS_ID`'s indices): [] where the driver is not loaded."""
    found = []
    for path in glob.glob(os.path.join(proc_root, "driver/nvidia/gpus/*/information")):
        bus = os.path.basename(os.path.dirname(path)).lower()
        try:
            with open(path) as handle:
                for line in handle:
                    key, _, value = line.partition(":")
                    if key.strip() == "Device Minor":
                        found.append((bus, int(value.strip())))
        except (OSError, ValueError):
            continue
    return [minor for _, minor in sorted(found)]


def gpu_minors(indices: list[int], minors: list[int] | None = None) -> list[int]:
    """The driver minors of the GPUs at `indices`: from `minors` (see `nvidia_minors`), or
    each index itself where the driver does not say (simulated GPUs, no driver)."""
    table = nvidia_minors() if minors is None else minors
    return [table[i] if i < len(table) else i for i in indices]
