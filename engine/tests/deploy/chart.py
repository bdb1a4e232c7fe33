"""The chart checks of engine/tests/chart.rs, through the real Helm SDK (helm-python-sdk)
and the Kubernetes API schemas (kubernetes-validate).

  chart.py lint CHART                  -> the lint report (JSON)
  chart.py render CHART NAMESPACE      -> values (JSON) on stdin; every manifest parsed
                                          (duplicate keys refused), validated in strict
                                          mode, printed as JSON {"objects", "notes",
                                          "kubernetes"}; exit 1 naming the first invalid one
  chart.py schema CHART                -> values (JSON) on stdin; exit 0 when the chart's
                                          values.schema.json accepts them, else 3 and why
"""

import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml

# The newest Kubernetes release whose API schemas the package ships.
KUBERNETES = kubernetes_validate.latest_version()


class StrictLoader(yaml.SafeLoader):
    """Refuses a mapping that repeats a key (the API server's strict decoding does)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def render(chart_dir, namespace, values):
    with helm.Chart.load(chart_dir) as chart:
        rendered = chart.render(values=values, name="plue", namespace=namespace,
                                is_install=True)
    objects, notes = [], ""
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.load_all(text, Loader=StrictLoader):
            if doc is None:
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                sys.exit(f"{template}: {doc.get('kind')} {doc['metadata'].get('name')}: "
                         f"{path}: {e.message}")
            objects.append({"template": template, "object": doc})
    return {"objects": objects, "notes": notes, "kubernetes": KUBERNETES}


def main():
    command, chart_dir = sys.argv[1], sys.argv[2]
    if command == "lint":
        json.dump(helm.lint(chart_dir, strict=True, kube_version=f"v{KUBERNETES}.0"),
                  sys.stdout)
    elif command == "render":
        json.dump(render(chart_dir, sys.argv[3], json.load(sys.stdin)), sys.stdout)
    elif command == "schema":
        with helm.Chart.load(chart_dir) as chart:
            try:
                chart.validate_schema(json.load(sys.stdin))
            except helm.HelmValuesError as e:
                print(e)
                sys.exit(3)
    else:
        sys.exit(f"unknown command {command}")


main()
