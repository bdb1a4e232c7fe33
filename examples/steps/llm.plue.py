# LLM steps: a Claude agent with workspace tools, inline prompt or prompt file.
def workflow(ctx):
    return Plan(
        name="LLM steps",
        triggers=[Trigger.on_pull_request()],
        steps=[
            Step.llm("summarise", prompt="Summarise the changes in this repository.", tools=["read_file", "list_files", "git_diff"], max_turns=10),
            Step.llm("triage", prompt_file="prompts/code-review.md", inputs={"files": ctx.changed_files}, model="claude-sonnet-4-5",
                     secrets=["ANTHROPIC_API_KEY"], depends_on=["summarise"]),
        ],
    )
