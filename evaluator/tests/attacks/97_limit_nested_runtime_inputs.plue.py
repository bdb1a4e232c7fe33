# attack: a 100,000-level nested list built at runtime (no recursion) passed in Step.llm inputs, to overflow the converter
# expect: limit

def workflow(ctx):
    nested = []
    for _ in range(100000):
        nested = [nested]
    return Plan(
        name="nested-runtime",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.llm("deep", "summarise", inputs={"x": nested})],
    )
