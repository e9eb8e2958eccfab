"""The daemons' side: the HTTP API on the Unix socket (api.py) with who calls (identity.py) and
what they may send (validation.py), the coordinator and agent processes (daemon.py), and
`labq up`, the supervised single-machine stack (up.py) with its demo workload (demo.py)."""
