# attack: a million zeros in an llm step's inputs, charged one byte each in the worker: 2 MiB of plan JSON decoded into 50 MB in the engine
# expect: limit

def workflow(ctx):
    return Plan(name="ci", steps=[Step.llm("a", prompt="hi", inputs={"x": [0] * 1040000})])
