import functools
import itertools

def workflow(ctx):
    objs = [functools.partial(max, i) for i in range(8)] + [iter([i]) for i in range(8)] + [itertools.count(i) for i in range(8)]
    index = {o: i for i, o in enumerate(objs)}
    return Plan(name="ci", steps=[Step.bash("o" + str(index[o]), "true") for o in set(objs)])
