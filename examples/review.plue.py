# An LLM code review: Claude reads the files with its workspace tools, following the prompt
# in examples/prompts/code-review.md; a bash step then prints the review it returned.
# Run from the repository root (the workspace is a copy of the current directory):
#   export ANTHROPIC_API_KEY=sk-ant-... && plue run examples/review.plue.py --secret ANTHROPIC_API_KEY
def workflow(ctx):
    files = ctx.changed_files or ["runner/src/llm/tools.rs"]
    return Plan(
        name="Code review",
        triggers=[Trigger.on_pull_request(), Trigger.manual()],
        steps=[
            Step.llm(
                "review",
                prompt_file="examples/prompts/code-review.md",
                inputs={"files": files, "focus": "correctness and security"},
                timeout=900,
            ),
            Step.bash(
                "report",
                'printf "%s\\n" "$REVIEW"',
                env={"REVIEW": "{{ steps.review.outputs.result }}"},
                depends_on=["review"],
            ),
        ],
    )
