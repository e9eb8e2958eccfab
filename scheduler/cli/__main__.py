"""`python -m scheduler.cli` is `labq`."""

from scheduler.cli.main import main

main()
