"""Command-line plumbing shared by the data tools (`convert`, `validate`).

Each tool keeps its flags in its own `absl.flags.FlagValues`, so importing
it never clashes with another program's global flags.
"""

import sys

from absl import flags


def flags_parser(flag_values, doc):
    """An `absl.app.run(flags_parser=...)` that parses `flag_values`.

    `--help` prints `doc` and the tool's flags; a bad flag prints the error
    and exits with status 1.
    """

    def parse(argv):
        if any(arg in ("-h", "--help", "--helpshort", "--helpfull") for arg in argv[1:]):
            print(doc)
            print(flag_values.get_help())
            sys.exit(0)
        try:
            rest = flag_values(argv)
        except flags.Error as e:
            sys.stderr.write(f"FATAL Flags parsing error: {e}\nPass --help to see the flags.\n")
            sys.exit(1)
        flags.FLAGS(argv[:1])  # absl.app requires its global flags to be parsed
        return rest

    return parse


def run(flag_values, main, argv):
    """Parses `argv` (program name first) into `flag_values` and returns `main(rest)`."""
    flag_values.unparse_flags()
    return main(flag_values(argv))
