# Full-stack feature template: design -> api, design -> ui, api + ui -> integrate -> test.
# Each agent starts from the workspace of the step before it (workspace_from), so the
# design, then the API, then the integration build on each other's files; the UI, built in
# parallel from the design, reaches the integration as artifacts (needs_artifacts). The
# design and the test report are kept for download.
FEATURE_INPUT = "feature"


def agent(step_id, task, **options):
    return Step.llm(step_id, prompt=task, max_turns=40, timeout=1800, **options)


def workflow(ctx):
    feature = ctx.inputs.get(FEATURE_INPUT, "the requested feature")
    return Plan(
        name="Full-stack feature",
        triggers=[Trigger.manual(inputs={FEATURE_INPUT: None})],
        steps=[
            agent("design", f"Write docs/design.md: the API and UI design of {feature}.",
                  artifacts=["docs/design.md"]),
            agent("api", "Implement the API from docs/design.md, with tests.",
                  depends_on=["design"], workspace_from="design"),
            agent("ui", "Implement the UI under web/ from docs/design.md, with tests.",
                  depends_on=["design"], workspace_from="design", artifacts=["web/**"]),
            agent("integrate", "Wire the UI in web/ to the API and fix any mismatch.",
                  depends_on=["api", "ui"], workspace_from="api", needs_artifacts=["ui"]),
            Step.bash("test", "set -o pipefail; make test 2>&1 | tee test-report.txt", depends_on=["integrate"],
                      workspace_from="integrate", artifacts=["test-report.txt"], retries=1),
        ],
    )
