# attack: a million empty dicts in an llm step's inputs: 3 MiB of plan JSON and a third of a second of engine CPU
# expect: limit

def workflow(ctx):
    return Plan(name="ci", steps=[Step.llm("a", prompt="hi", inputs={"x": [{}] * 1040000})])
