"""The benchmarks (scripts run from this folder, see README.md) and their helpers. A package so
that the tests' `import bench.stack` finds this folder first, whatever else is installed."""
