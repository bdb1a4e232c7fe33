# Bug-fix template: investigate -> analyze -> fix -> verify.
def workflow(ctx):
    issue = ctx.inputs.get("issue", "the reported bug")
    return Plan(
        name="Bug fix",
        triggers=[Trigger.manual(inputs={"issue": None})],
        steps=[
            Step.llm("investigate", prompt=f"Reproduce {issue}; write what you find to notes/investigation.md.", max_turns=30),
            Step.llm("analyze", prompt="From notes/investigation.md, find the root cause; write notes/analysis.md.", depends_on=["investigate"]),
            Step.llm("fix", prompt="Fix the root cause from notes/analysis.md and add a regression test.", depends_on=["analyze"]),
            Step.bash("verify", "make test", depends_on=["fix"], timeout=1200),
        ],
    )
