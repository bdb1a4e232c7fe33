# Full-stack feature template: design -> api, design -> ui, api + ui -> integrate -> test.
FEATURE_INPUT = "feature"


def agent(step_id, task, **options):
    return Step.llm(step_id, prompt=task, max_turns=40, timeout=1800, **options)


def workflow(ctx):
    feature = ctx.inputs.get(FEATURE_INPUT, "the requested feature")
    return Plan(
        name="Full-stack feature",
        triggers=[Trigger.manual(inputs={FEATURE_INPUT: None})],
        steps=[
            agent("design", f"Write docs/design.md: the API and UI design of {feature}."),
            agent("api", "Implement the API from docs/design.md, with tests.", depends_on=["design"]),
            agent("ui", "Implement the UI from docs/design.md, with tests.", depends_on=["design"]),
            agent("integrate", "Wire the UI to the API and fix any mismatch.", depends_on=["api", "ui"]),
            Step.bash("test", "make test", depends_on=["integrate"], retries=1),
        ],
    )
