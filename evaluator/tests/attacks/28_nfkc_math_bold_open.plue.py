# attack: call open via MATHEMATICAL BOLD letters (𝐨𝐩𝐞𝐧) to read /etc/passwd
# expect: forbidden

def workflow(ctx):
    leaked = 𝐨𝐩𝐞𝐧("/etc/passwd").read()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
