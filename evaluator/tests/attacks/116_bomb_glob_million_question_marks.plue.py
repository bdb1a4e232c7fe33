# attack: a branch glob of a million "?": passed validation, then panicked in trigger matching
# expect: limit

def workflow(ctx):
    return Plan(name="ci", triggers=[Trigger.on_push(branch="?" * 1000000)], steps=[Step.bash("a", "true")])
