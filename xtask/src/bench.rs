pub fn run(_args: &[&str]) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
