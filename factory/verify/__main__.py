"""Grade one completion: python -m vlfactory.verify [--protocol NAME] COMPLETION GOLD [CHOICE ...]"""

import argparse

from vlfactory.verify import PROTOCOLS, grade

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m vlfactory.verify", description=__doc__.split(":")[0] + ".")
    parser.add_argument("--protocol", default="vlfactory", choices=[p for p in PROTOCOLS if p != "judge"])
    parser.add_argument("completion")
    parser.add_argument("gold")
    parser.add_argument("choices", nargs="*", help="the problem's options, in order")
    a = parser.parse_args()
    print(grade(a.completion, a.gold, a.choices or None, protocol=a.protocol))
