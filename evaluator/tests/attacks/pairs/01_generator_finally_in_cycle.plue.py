# attack: a generator with a finally left in a garbage cycle; its finally used to run inside the next evaluation and burn its time budget
def workflow(ctx):
    def gen():
        try:
            yield 1
        finally:
            n = 0
            while True:
                n += 1
    g = gen()
    next(g)
    cycle = [g]
    cycle.append(cycle)
    return Plan(name="attacker", steps=[Step.bash("a", "true")])
