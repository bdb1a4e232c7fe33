# Manual trigger: a deployment dispatched by hand with validated inputs.
def workflow(ctx):
    target = ctx.inputs.get("target", "staging")
    return Plan(
        name="Deploy",
        triggers=[
            Trigger.manual(inputs={
                "target": {"default": "staging", "options": ["staging", "production"], "description": "Where to deploy"},
                "version": None,
                "dry_run": True,
            }),
        ],
        steps=[
            Step.bash("deploy", f"echo deploying to {target}", secrets=["DEPLOY_TOKEN"], env={"TARGET": target}),
        ],
    )
