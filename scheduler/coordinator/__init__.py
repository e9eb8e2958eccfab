"""The coordinator's room: the leader and its scheduling cycle (`core`), what it does about each
active job given its node's report (`reactions`), its channel to the nodes (`nodes`), which
waiting jobs may be scheduled at all (`waiting`), idle GPUs (`idle`) and the admin's
notifications (`notify`)."""
