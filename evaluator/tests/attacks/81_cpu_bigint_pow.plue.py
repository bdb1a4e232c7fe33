# attack: 7 ** (10 ** 8) big-integer exponentiation computed from variables (no constant folding)
# expect: timeout

def workflow(ctx):
    base = 7
    exponent = 10 ** 8
    huge = base ** exponent
    return Plan(
        name="pow-%d" % (huge & 0xff),
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("noop", "true")],
    )
