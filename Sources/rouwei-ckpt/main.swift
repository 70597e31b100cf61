import CLI
RootCommand.main()
