#!/usr/bin/env bash
# Prints a greeting: greet.sh [NAME]
# The agent pipelines in examples/agents/ change this file; their tests are test.sh.
set -euo pipefail
name="${1:-world}"
echo "hello, $name"
