"""The `abstractgateway` command (`abstractgateway.cli`), its `config` group (`config_cli`) and the
sample-flow builder (`sample_flows`): the one package that imports both services, each lazily, when a
command runs. Named after the distribution (as the original gateway's package was), so installing the
project adds no generic top-level name to site-packages. Nothing else imports this package.
"""
