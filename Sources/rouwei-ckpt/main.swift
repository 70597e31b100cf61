import CLI

RootCommand.main()
