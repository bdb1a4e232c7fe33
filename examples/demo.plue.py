# The demo run by README's first command: `plue run examples/demo.plue.py`.
# Bash and Python steps, outputs passed between steps, two parallel branches, a join,
# and a step that only runs when something failed (so it is skipped here).
def workflow(ctx):
    return Plan(
        name="Demo",
        triggers=[Trigger.manual()],
        env={"GREETING": "hello from plue"},
        steps=[
            Step.bash(
                "prepare",
                'echo "$GREETING on branch ' + ctx.branch + '"\n'
                'echo "version=1.4.$((6 * 7))" >> "$PLUE_OUTPUT"\n'
                'ls examples | head -3',
            ),
            Step.python(
                "count-files",
                "import os\n"
                "n = sum(len(files) for _, _, files in os.walk('examples'))\n"
                "print(f'{n} files under examples/')\n"
                "open(os.environ['PLUE_OUTPUT'], 'a').write(f'files={n}\\n')",
                depends_on=["prepare"],
            ),
            Step.bash(
                "build",
                "echo building version {{ steps.prepare.outputs.version }}\n"
                "for i in 1 2 3; do echo \"compiling part $i\"; sleep 0.1; done\n"
                'echo "artifact=demo-{{ steps.prepare.outputs.version }}.tar" >> "$PLUE_OUTPUT"',
                depends_on=["prepare"],
            ),
            Step.bash(
                "report",
                'echo "built {{ steps.build.outputs.artifact }} from {{ steps.count-files.outputs.files }} files"',
                depends_on=["build", "count-files"],
            ),
            Step.bash("on-failure", "echo 'something failed'", depends_on=["report"], when="failure"),
        ],
    )
