# attack: a finally that re-arms itself in a new cycle and prints what the running evaluation was handling
import json

def workflow(ctx):
    def spy(depth):
        try:
            yield depth
        finally:
            print("SPY", depth)
            g = spy(depth + 1)
            next(g)
            keep = [g]
            keep.append(keep)
    g = spy(0)
    next(g)
    c = [g]
    c.append(c)
    return Plan(name="attacker", steps=[Step.bash("a", "true")])
