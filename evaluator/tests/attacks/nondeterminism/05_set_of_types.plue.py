def workflow(ctx):
    kinds = [int, str, list, dict, tuple, float, bool, set, frozenset, range, bytes, zip, map]
    order = {k: i for i, k in enumerate(kinds)}
    return Plan(name="ci", steps=[Step.bash("t" + str(order[k]), "true") for k in set(kinds)])
