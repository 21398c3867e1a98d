"""Stand-in for the pip bootstrap script ansible-test downloads.

ansible-test sanity creates an empty virtualenv per test and bootstraps pip
with a script fetched from a host our machines cannot reach. This stand-in
does the same job with what is here: pip from the interpreter's bundled
wheel (ensurepip), then the requested packages from the package index.
scripts/sanity.sh places it where ansible-test looks for its cached copy.
"""

import ensurepip
import os
import subprocess
import sys

saved = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
ensurepip.bootstrap(upgrade=True)
# ensurepip points PIP_CONFIG_FILE at /dev/null for its own run; the real
# install must see the machine's pip configuration (index, certificates).
for k in [k for k in os.environ if k.startswith("PIP_")]:
    del os.environ[k]
os.environ.update(saved)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
