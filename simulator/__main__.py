"""Entry point of `python -m simulator`; see simulator.cli."""

import sys

from simulator.cli import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's clean stop is still flushing
        sys.exit(130)
