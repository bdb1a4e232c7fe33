"""Parses an OpenMetrics exposition (stdin) with the Prometheus Python client's strict
parser and prints its families as JSON: {name: {"type", "unit", "samples": [[name,
labels, value]]}}. A malformed exposition fails with the parser's message (exit 1)."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    if family.name in families:
        sys.exit(f"family {family.name} appears twice")
    families[family.name] = {
        "type": family.type,
        "unit": family.unit,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
json.dump(families, sys.stdout)
