"""Stop early, in one line, when this machine lacks the Python or Java the pinned stack needs.

Runs with the system interpreter before the virtual environment exists, so: standard library only.
"""
import re
import shutil
import subprocess
import sys

PYTHON_RANGE = ((3, 11), (3, 13))  # every pinned wheel exists for these; tested on 3.11 and 3.13
MIN_JAVA = 17  # Spark 4 runs on Java 17 or 21


def main() -> int:
    low, high = PYTHON_RANGE
    if not low <= sys.version_info[:2] <= high:
        print(f"Python {sys.version.split()[0]} is outside {low[0]}.{low[1]}-{high[0]}.{high[1]}, which the "
              f"pinned wheels support: install python3.11 (Debian: apt-get install python3.11 python3.11-venv) "
              f"and run make PYTHON=python3.11", file=sys.stderr)
        return 1
    java = shutil.which("java")
    if java is None:
        print(f"Java not found: install Java {MIN_JAVA} (Debian: apt-get install openjdk-{MIN_JAVA}-jre-headless)",
              file=sys.stderr)
        return 1
    banner = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    major = int(match.group(1)) if match else 0
    if major == 1 and match.group(2):
        major = int(match.group(2))  # "1.8.0" means Java 8
    if major < MIN_JAVA:
        print(f"Java {major or 'of unknown version'} at {java} is too old for Spark 4: install Java {MIN_JAVA} "
              f"(Debian: apt-get install openjdk-{MIN_JAVA}-jre-headless) or set JAVA_HOME", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
