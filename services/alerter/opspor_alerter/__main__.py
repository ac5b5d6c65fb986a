from opspor_alerter.main import main

main()
