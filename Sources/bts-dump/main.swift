import TTCommands

BtsDumpTool.main()
