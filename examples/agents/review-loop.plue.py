# An agent pipeline with a review loop, runnable against the scripted Claude server:
#   planner (llm: writes PLAN.md) -> builder (llm: edits the code, from the planner's
#   workspace) -> tests (bash, in the builder's workspace) -> reviewer (llm: reads the
#   edit, records verdict= and feedback= in $PLUE_OUTPUT with its bash tool) -> verdict
#   (bash: fails unless the reviewer approved; loops back to the builder at most twice,
#   the builder reading the feedback) -> documenter (llm: docs/** kept as artifacts) ->
#   approve (a person) -> ship (bash).
# An llm step succeeds whenever the conversation ends normally, so the pass/fail decision
# is the small `verdict` step; `loop_to` sits on it. docs/src/guide/agents.md, "Agent
# pipelines", runs it against `fake-claude --script examples/agents/scripts/review-loop.json`.
TASK = "Add a --shout flag to examples/agents/demo/greet.sh that prints the greeting in capitals."
PROMPTS = "examples/agents/prompts/"
DEMO = "examples/agents/demo/"


def agent(step_id, **options):
    return Step.llm(step_id, prompt_file=PROMPTS + step_id + ".md", timeout=900, **options)


def workflow(ctx):
    task = ctx.inputs.get("task") or TASK
    planner = agent("planner", inputs={"task": task})
    builder = agent(
        "builder",
        # A feedback read: the reviewer's output of the previous iteration (empty in the first).
        inputs={"task": task, "feedback": "{{ steps.reviewer.outputs.feedback }}"},
        depends_on=[planner],
        workspace_from=planner,
    )
    tests = Step.bash("tests", "bash " + DEMO + "test.sh", depends_on=[builder], workspace_from=builder, timeout=300)
    reviewer = agent("reviewer", inputs={"task": task}, depends_on=[builder, tests], workspace_from=builder)
    # No template here: a bash step that references outputs may not receive values bash
    # could evaluate (a review quoting `$x[1]`), so it reads its variables itself.
    verdict = Step.bash(
        "verdict",
        'echo "reviewer: ${PLUE_OUTPUT_REVIEWER_VERDICT:-no verdict}"\n'
        'if [ "${PLUE_OUTPUT_REVIEWER_VERDICT:-}" != approve ]; then\n'
        '  printf "changes requested:\\n%s\\n" "${PLUE_OUTPUT_REVIEWER_FEEDBACK:-}"\n'
        "  exit 1\n"
        "fi",
        depends_on=[reviewer],
        loop_to=builder,
        max_loops=2,
    )
    documenter = agent(
        "documenter",
        inputs={"task": task},
        depends_on=[builder, verdict],
        workspace_from=builder,
        artifacts=["docs/**"],
    )
    approve = Step.approval("approve", message="Ship the reviewed change and its docs?", depends_on=[documenter], timeout=86400)
    ship = Step.bash(
        "ship",
        "bash " + DEMO + "greet.sh --shout shipped\nls docs",
        depends_on=[approve, builder, verdict, documenter],
        workspace_from=builder,
        needs_artifacts=[documenter],
    )
    return Plan(
        name="Review loop",
        triggers=[Trigger.manual(inputs={"task": TASK})],
        steps=[planner, builder, tests, reviewer, verdict, documenter, approve, ship],
    )
