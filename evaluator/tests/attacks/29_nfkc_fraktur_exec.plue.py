# attack: call exec via MATHEMATICAL FRAKTUR letters (𝔢𝔵𝔢𝔠) to run an os import
# expect: forbidden

def workflow(ctx):
    𝔢𝔵𝔢𝔠("import os; os.system('touch /tmp/plue-attack-pwned')")
    leaked = "done"
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
