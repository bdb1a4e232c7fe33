import json
import math

def workflow(ctx):
    fns = [len, abs, min, max, sorted, json.dumps, json.loads, math.sqrt, math.floor, str.upper]
    names = {f: i for i, f in enumerate(fns)}
    return Plan(name="ci", steps=[Step.bash("s" + str(names[f]), "true") for f in set(fns)])
