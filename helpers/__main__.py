"""``python -m helpers --profile cpu``: the papermill runner (:mod:`helpers.tools.run`)."""
import sys

from helpers.tools.run import main

main(sys.argv[1:])
