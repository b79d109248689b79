import TTCommands

BtsDump.main()
