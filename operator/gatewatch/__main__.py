"""`python -m gatewatch` is `gatewatch`."""
from gatewatch.cli import main

main()
