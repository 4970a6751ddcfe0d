"`python -m fastgr`: the same as the `fastgr` command."

from fastgr.cli import main

if __name__ == "__main__":
    main()
