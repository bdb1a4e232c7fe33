# attack: json.loads('[' * 100000 + ']' * 100000): deeply nested JSON decoded in C
# expect: recursion

import json


def workflow(ctx):
    depth = 100000
    nested = json.loads("[" * depth + "]" * depth)
    return Plan(
        name="nested",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.llm("x", "summarise", inputs={"x": nested})],
    )
