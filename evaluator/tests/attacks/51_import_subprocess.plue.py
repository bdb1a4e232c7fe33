# attack: import subprocess and spawn a process
# expect: import

import subprocess


def workflow(ctx):
    leaked = subprocess.run(["touch", "/tmp/plue-attack-pwned"])
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
