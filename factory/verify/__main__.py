"""Grade one completion: python -m vlfactory.verify COMPLETION GOLD [CHOICE ...]"""

import sys

from vlfactory.verify import grade

if __name__ == "__main__":
    print(grade(sys.argv[1], sys.argv[2], sys.argv[3:] or None))
