"""`python -m robust_pt` (what torchrun launches) runs the CLI."""

from .cli import main

if __name__ == "__main__":
    main()
