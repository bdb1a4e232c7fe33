# attack: use host objects as dict keys or in a frozenset (identity hashes)
# expect: error

def workflow(ctx):
    t = Trigger.on_push(branch="main")
    order = frozenset([t, ctx])
    return Plan(name="ci", triggers=list(order), steps=[Step.bash("a", "true")])
