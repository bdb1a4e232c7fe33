# attack: many short globs that fit the byte budget but not the count bound
# expect: limit

def workflow(ctx):
    return Plan(name="ci", triggers=[Trigger.on_push(branches=["b" + str(i) for i in range(5000)])], steps=[Step.bash("a", "true")])
