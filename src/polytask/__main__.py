"""``python -m polytask ...``: the command line (as ``torchrun -m polytask`` will need)."""

from polytask.cli import main

if __name__ == "__main__":
    main()
