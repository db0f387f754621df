"""`python -m choreography.cli`."""

from choreography.cli import main

main()
