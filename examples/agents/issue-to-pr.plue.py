# From an issue to a pull request, summoned by a comment: someone with write access
# comments `/plue fix` on an issue, and
#   investigate (llm: reads the issue and the code, records notes=) -> fix (llm: edits,
#   runs the tests) -> tests (bash, in the fix's workspace) -> review (llm: records
#   verdict= and feedback=) -> verdict (bash: fails unless approved; loops back to fix at
#   most twice) -> publish (llm with safe outputs: proposes the pull request and a comment).
# No step holds a forge token: `publish` only *proposes*; after it succeeds the engine
# checks the proposals (paths, size, no secret, no mention) and opens the pull request
# (the fix's diff against the commit the run started from) and the comment itself. Plue
# answers on the issue when the run starts and when it ends, linking the pull request.
# The issue's text reaches the agents as prompt inputs (data), never as template or code.
# See docs-draft/issue-to-pr.md to run it against fake-claude and fake-forge in one command.
PROMPTS = "examples/agents/prompts/issue-"


def agent(step_id, prompt, **options):
    return Step.llm(step_id, prompt_file=PROMPTS + prompt + ".md", timeout=900, **options)


def workflow(ctx):
    issue = ctx.issue
    title = issue.title if issue else ""
    body = issue.body if issue else ""
    number = str(issue.number) if issue else ""
    investigate = agent("investigate", "investigator", inputs={"title": title, "body": body})
    fix = agent(
        "fix",
        "fixer",
        inputs={
            "title": title,
            "body": body,
            "notes": "{{ steps.investigate.outputs.notes }}",
            # The reviewer's feedback of the previous iteration (empty in the first).
            "feedback": "{{ steps.review.outputs.feedback }}",
        },
        depends_on=[investigate],
    )
    tests = Step.bash("tests", "bash examples/agents/demo/test.sh", depends_on=[fix], workspace_from=fix, timeout=300)
    review = agent("review", "reviewer", inputs={"title": title}, depends_on=[fix, tests], workspace_from=fix)
    verdict = Step.bash(
        "verdict",
        'echo "reviewer: ${PLUE_OUTPUT_REVIEW_VERDICT:-no verdict}"\n'
        'if [ "${PLUE_OUTPUT_REVIEW_VERDICT:-}" != approve ]; then\n'
        '  printf "changes requested:\\n%s\\n" "${PLUE_OUTPUT_REVIEW_FEEDBACK:-}"\n'
        "  exit 1\n"
        "fi",
        depends_on=[review],
        loop_to=fix,
        max_loops=2,
    )
    publish = agent(
        "publish",
        "publisher",
        inputs={"title": title, "number": number},
        depends_on=[fix, verdict],
        workspace_from=fix,
        safe_outputs=SafeOutputs(
            pull_request=True,
            comments=1,
            paths_allow=["examples/agents/demo/**"],
            max_files=5,
            max_diff_bytes=65536,
            branch_prefix="plue/",
        ),
    )
    return Plan(
        name="Issue to pull request",
        triggers=[Trigger.on_comment(pattern=r"^/plue\s+fix\b", on=["issue"], authors="write")],
        steps=[investigate, fix, tests, review, verdict, publish],
    )
