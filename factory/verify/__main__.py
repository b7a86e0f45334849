"""Grade one completion: python -m vlfactory.verify [--protocol NAME] COMPLETION GOLD [CHOICE ...]"""

import sys

from vlfactory.verify import grade

if __name__ == "__main__":
    args, protocol = sys.argv[1:], "vlfactory"
    if args[:1] == ["--protocol"]:
        protocol, args = args[1], args[2:]
    print(grade(args[0], args[1], args[2:] or None, protocol=protocol))
