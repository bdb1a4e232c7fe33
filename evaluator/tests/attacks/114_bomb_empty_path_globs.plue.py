# attack: 2.6 million empty path globs: seconds and hundreds of MB of diagnostics in the engine
# expect: limit

def workflow(ctx):
    return Plan(name="ci", triggers=[Trigger.on_push(paths=[""] * 2600000)], steps=[Step.bash("a", "true")])
