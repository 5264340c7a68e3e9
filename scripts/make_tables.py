"""Prints markdown tables from results.json files.

  python scripts/make_tables.py results/mnist/*/results.json
"""

import sys

from sca_jax import report

if __name__ == "__main__":
  runs = report.load(sys.argv[1:])
  print(report.training_table(runs))
  print()
  print(report.attack_table(runs))
