# Python steps: a script run by the runner's interpreter.
import textwrap

SCRIPT = textwrap.dedent("""
    import json, os
    data = {"ok": True}
    print(json.dumps(data))
    with open(os.environ["PLUE_OUTPUT"], "a") as out:
        out.write("status=ok\\n")
""")


def workflow():
    return Plan(
        name="Python steps",
        triggers=[Trigger.manual()],
        steps=[
            Step.python("compute", SCRIPT, timeout=60),
            Step.python("echo", "print('compute said ' + {{ steps.compute.outputs.status }})", depends_on=["compute"]),
        ],
    )
