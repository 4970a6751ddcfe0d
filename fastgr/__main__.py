"`python -m fastgr`: the same as the `fastgr` command."

from fastgr.cli import app

if __name__ == "__main__":
    app(prog_name="fastgr")
